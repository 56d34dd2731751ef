#!/usr/bin/env bash
# The main job, offline, on the embedded default store: make a throwaway CA,
# start a real `openssl ocsp` responder on loopback, fetch every
# certificate's staple into the local store with staplectl, and show it.
# Everything lives under ./demo-state (delete it to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/staplectl ] || bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
export STAPLECTL_HOME="$PWD/demo-state/home"
pki="$PWD/demo-state/pki"
rm -rf "$pki" && mkdir -p "$pki" "$STAPLECTL_HOME"
# The demo's responder runs on this host: loopback responders are refused
# unless the configuration allows them (docs/security.md).
export STAPLECTL_CONFIG="$PWD/demo-state/config.toml"
printf '[responder]\nallow = ["loopback"]   # the demo responder on 127.0.0.1\n' > "$STAPLECTL_CONFIG"
cd "$pki"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port/"

ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ec ca.key
openssl req -x509 -new -key ca.key -subj "/CN=staplectl demo CA" -days 30 -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
ec responder.key
openssl req -new -key responder.key -subj "/CN=staplectl demo OCSP responder" -out responder.csr 2>/dev/null
printf 'extendedKeyUsage=OCSPSigning\nbasicConstraints=CA:FALSE\n' > responder.ext
openssl x509 -req -in responder.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
    -extfile responder.ext -out responder.pem 2>/dev/null

: > index.txt
for name in www mail revoked; do
    ec "$name.key"
    openssl req -new -key "$name.key" -subj "/CN=$name.demo.test" -out "$name.csr" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nsubjectAltName=DNS:%s.demo.test\nauthorityInfoAccess=OCSP;URI:%s\n' \
        "$name" "$url" > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
        -extfile "$name.ext" -out "$name.pem" 2>/dev/null
    cat "$name.pem" ca.pem > "$name-chain.pem"   # what a server is configured with
    serial=$(openssl x509 -in "$name.pem" -noout -serial | cut -d= -f2)
    expiry=$(date -u -d '+30 days' +%y%m%d%H%M%SZ)
    subject="/CN=$name.demo.test"
    if [ "$name" = revoked ]; then
        printf 'R\t%s\t%s,keyCompromise\t%s\tunknown\t%s\n' "$expiry" "$(date -u -d '-1 hour' +%y%m%d%H%M%SZ)" "$serial" "$subject" >> index.txt
    else
        printf 'V\t%s\t\t%s\tunknown\t%s\n' "$expiry" "$serial" "$subject" >> index.txt
    fi
done

# OpenSSL 3.0's -port takes a bare number; we only ever connect to 127.0.0.1.
openssl ocsp -index index.txt -port "$port" -rsigner responder.pem -rkey responder.key \
    -CA ca.pem -ndays 1 2>responder.log &
responder=$!
trap 'kill $responder 2>/dev/null || true' EXIT
# Wait with a real OCSP query: a bare TCP probe wedges openssl's responder.
for _ in $(seq 50); do
    openssl ocsp -issuer ca.pem -cert www.pem -url "$url" -noverify >/dev/null 2>&1 && break
    sleep 0.1
done

echo "== real OCSP responder: openssl ocsp on $url; cache: the local store under $STAPLECTL_HOME"
status=0
for name in www mail revoked; do
    echo
    echo "\$ staplectl fetch $name-chain.pem"
    staplectl fetch "$name-chain.pem" || status=$?
done
echo
echo "\$ staplectl fetch www-chain.pem --json --out www.ocsp"
staplectl fetch www-chain.pem --json --out www.ocsp
echo
echo "== openssl verifies what staplectl wrote:"
openssl ocsp -respin www.ocsp -issuer ca.pem -CAfile ca.pem -cert www.pem -no_nonce 2>&1 | sed 's/^/   /'
echo
echo "\$ staplectl inspect      # every entry in the local store"
staplectl inspect
echo
echo "(the revoked certificate's fetch exited 1, as it should: exit status $status)"
