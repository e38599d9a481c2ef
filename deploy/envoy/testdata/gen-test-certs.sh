#!/usr/bin/env bash
# TEST-ONLY certificates for validating and trying deploy/envoy/sidecar.yaml.
# The private keys are public (they are in this repository): never use them
# anywhere but a test on loopback.
#
# Regenerate: bash deploy/envoy/testdata/gen-test-certs.sh
set -euo pipefail
cd "$(dirname "$0")"
days=36500
subj_prefix="/O=stepguard TEST ONLY - DO NOT USE"

# Server certificate for the inbound listener (self-signed, localhost).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout server.key -out server.crt -days "$days" \
  -subj "$subj_prefix/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -addext "basicConstraints=critical,CA:FALSE" \
  -addext "keyUsage=critical,digitalSignature" \
  -addext "extendedKeyUsage=serverAuth" 2>/dev/null

# CA that signs client certificates.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout client-ca.key -out client-ca.crt -days "$days" \
  -subj "$subj_prefix/CN=stepguard test client CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

# A client certificate with a SPIFFE-style URI SAN (the mTLS principal).
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout client.key -out client.csr \
  -subj "$subj_prefix/CN=test-client" 2>/dev/null
openssl x509 -req -in client.csr -CA client-ca.crt -CAkey client-ca.key \
  -CAcreateserial -out client.crt -days "$days" \
  -extfile <(printf '%s\n' \
    "subjectAltName=URI:spiffe://stepguard.test/ns/default/sa/test-client" \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=clientAuth") 2>/dev/null
rm -f client.csr client-ca.srl
echo "wrote TEST-ONLY certificates to $(pwd)"
