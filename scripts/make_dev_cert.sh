#!/usr/bin/env bash
# Make a self-signed HTTPS certificate for the dev stack's Application Gateway, as a PFX it accepts.
#
#   scripts/make_dev_cert.sh <host name> [more host names...]
#
# The host name is what clients type: `<dnsLabel>.<location>.cloudapp.azure.com` for the App
# Gateway's own name (set dnsLabel first: `pulumi config set dnsLabel mcpgw-dev-<you> -s dev`), or
# your hostName. Every name goes into subjectAltName: Node (the MCP Inspector), browsers and Python
# check only the SAN, never the CN.
#
# The PFX uses the legacy PKCS#12 encryption (PBE-SHA1-3DES for key and certificates, a SHA-1 MAC):
# OpenSSL 3 `pkcs12 -export` defaults to AES-256 with PBKDF2, which Application Gateway rejects.
#
# Environment:
#   OUT_DIR        where to write gateway.key, gateway.crt, gateway.pfx (default: .dev-cert)
#   PFX_PASSWORD   PFX password (default: 24 random characters, written to $OUT_DIR/pfx-password)
#   DAYS           validity in days (default: 90)
#
# Then (docs/deploy-azure.md, step 3):
#   pulumi config set --secret tlsCertificate "$(base64 -w0 .dev-cert/gateway.pfx)" -s dev
#   pulumi config set --secret tlsCertificatePassword "$(cat .dev-cert/pfx-password)" -s dev
# and trust .dev-cert/gateway.crt in clients: curl --cacert, NODE_EXTRA_CA_CERTS, SSL_CERT_FILE.
set -euo pipefail

if [[ $# -lt 1 || "$1" == -* ]]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
command -v openssl >/dev/null || { echo "make_dev_cert.sh: openssl is not installed" >&2; exit 1; }

OUT_DIR="${OUT_DIR:-.dev-cert}"
DAYS="${DAYS:-90}"
mkdir -p "$OUT_DIR"
chmod 700 "$OUT_DIR"
if [[ -z "${PFX_PASSWORD:-}" ]]; then
  PFX_PASSWORD="$(openssl rand -base64 18 | tr -d '/+=' | cut -c1-24)"
fi
printf '%s' "$PFX_PASSWORD" >"$OUT_DIR/pfx-password"
chmod 600 "$OUT_DIR/pfx-password"

san=""
for name in "$@"; do
  san="${san:+$san,}DNS:$name"
done

openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$DAYS" \
  -subj "/CN=$1" \
  -addext "subjectAltName=$san" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign" \
  -addext "extendedKeyUsage=serverAuth" \
  -keyout "$OUT_DIR/gateway.key" -out "$OUT_DIR/gateway.crt" 2>/dev/null
chmod 600 "$OUT_DIR/gateway.key"

PFX_PASSWORD="$PFX_PASSWORD" openssl pkcs12 -export \
  -keypbe PBE-SHA1-3DES -certpbe PBE-SHA1-3DES -macalg sha1 \
  -inkey "$OUT_DIR/gateway.key" -in "$OUT_DIR/gateway.crt" \
  -name mcp-gateway-dev \
  -out "$OUT_DIR/gateway.pfx" -passout env:PFX_PASSWORD

echo "wrote $OUT_DIR/gateway.crt, $OUT_DIR/gateway.key, $OUT_DIR/gateway.pfx (password in $OUT_DIR/pfx-password)"
echo "subjectAltName: $san"
