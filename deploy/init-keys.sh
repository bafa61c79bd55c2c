#!/bin/sh
# One-shot (the compose service init-keys), run in the Cocoon image before
# any replica starts. Makes everything the replicas must share and that
# Cocoon would otherwise make per process:
#
#   - the rotation key and the JWK, through the image's own /init-keys.sh
#     (skipped when COCOON_INIT_KEYS is set empty, as the tests do);
#   - nonce.secret: the HMAC key Cocoon signs its OAuth DPoP nonces with.
#
# Cocoon reads the nonce secret from "nonce.secret" in its working
# directory (no setting names it) and, when the file is missing, makes a
# random one and writes it there. Two replicas with two secrets reject each
# other's nonces, and /oauth/par and /oauth/token carry no token, so Caddy
# sends them to any replica: OAuth sign-in and refresh would fail about half
# the time. So the secret is made once, here, in the keys directory, and
# every replica runs with that directory as its working directory.
#
#   KEYS_DIR          where the keys live (default /keys)
#   COCOON_INIT_KEYS  the image's key script (default /init-keys.sh)
#
# An existing non-empty secret is kept (replacing it only invalidates the
# nonces clients hold, but there is no reason to). An empty file is
# replaced: Cocoon would sign with an empty key.
set -eu

keys=${KEYS_DIR:-/keys}
init=${COCOON_INIT_KEYS-/init-keys.sh}

if [ -n "$init" ]; then
  /bin/sh "$init"
fi

mkdir -p "$keys"
if [ -s "$keys/nonce.secret" ]; then
  echo "init-keys: nonce secret already exists"
  exit 0
fi
umask 077
# 32 random bytes, Cocoon's own length for this secret
head -c 32 /dev/urandom > "$keys/nonce.secret.tmp"
mv "$keys/nonce.secret.tmp" "$keys/nonce.secret"
echo "init-keys: nonce secret generated at $keys/nonce.secret"
