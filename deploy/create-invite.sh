#!/bin/sh
# One-shot (the compose service create-invite): creates the first invite
# code on a Cocoon replica through its admin API and saves it, so the first
# account can be made. Runs in the Cocoon image (sh, curl, sed).
#
#   COCOON_ADMIN_PASSWORD  the replicas' admin password (required)
#   INVITE_URL             a replica, e.g. http://cocoon1:8080
#   INVITE_USES            how many accounts the code may create (default 1)
#   INVITE_FILE            where to save it (default /keys/initial-invite-code.txt)
#
# com.atproto.server.createInviteCode with HTTP basic auth admin:<password>
# answers {"code": "..."}. Nothing is done when INVITE_FILE already holds a
# code, so restarts do not mint more. The password never appears on a
# command line or in the output.
set -eu

url=${INVITE_URL:?set INVITE_URL}
uses=${INVITE_USES:-1}
file=${INVITE_FILE:-/keys/initial-invite-code.txt}
: "${COCOON_ADMIN_PASSWORD:?set COCOON_ADMIN_PASSWORD}"

if [ -s "$file" ]; then
  echo "create-invite: a code was made before: $(cat "$file") (in $file)"
  exit 0
fi
case $uses in
  '' | *[!0-9]*) echo "create-invite: INVITE_USES must be a whole number, got \"$uses\"" >&2; exit 2 ;;
esac
# Cocoon requires useCount >= 1 (0 fails its validation with a bare 400)
uses=$(printf '%s' "$uses" | sed 's/^0*//')
if [ -z "$uses" ]; then
  echo "create-invite: INVITE_USES must be at least 1 (Cocoon makes no invite code for 0 uses), got \"${INVITE_USES}\"" >&2
  exit 2
fi

# curl reads the credentials from a config on stdin; quote \ and " for it
pw=$(printf '%s' "$COCOON_ADMIN_PASSWORD" | sed 's/[\\"]/\\&/g')
resp=$(printf 'user = "admin:%s"\n' "$pw" |
  curl -sS -K - --retry 30 --retry-delay 2 --retry-connrefused \
    -H 'Content-Type: application/json' -d "{\"useCount\":$uses}" \
    -w '\n%{http_code}' "$url/xrpc/com.atproto.server.createInviteCode") || {
  echo "create-invite: cannot reach $url" >&2
  exit 1
}
status=$(printf '%s\n' "$resp" | tail -n 1)
body=$(printf '%s\n' "$resp" | sed '$d')
code=$(printf '%s' "$body" | sed -n 's/.*"code" *: *"\([^"]*\)".*/\1/p')
if [ "$status" != 200 ] || [ -z "$code" ]; then
  echo "create-invite: $url answered HTTP $status: $body" >&2
  case $status:$body in
    400:*Unauthorized*) echo "create-invite: (Cocoon answers 400 Unauthorized to a wrong COCOON_ADMIN_PASSWORD)" >&2 ;;
  esac
  exit 1
fi

umask 077
printf '%s\n' "$code" > "$file.tmp"
mv "$file.tmp" "$file"
echo "create-invite: first invite code ($uses use(s)): $code"
echo "create-invite: saved in $file"
