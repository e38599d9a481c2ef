#!/usr/bin/env bash
# Generates DEVELOPMENT-ONLY secrets for overlays/dev into its secrets/ directory (git-ignored):
# a 32-byte transaction binding key, an Ed25519 evidence signing key (PKCS#8 PEM) and a
# placeholder OIDC client secret (replace it with the one your IdP registered).
#   deploy/kubernetes/overlays/dev/gen-dev-secrets.sh [DIR]
set -euo pipefail
dir="${1:-$(dirname "$0")/secrets}"
mkdir -p "$dir"
umask 077
openssl rand -out "$dir/txn-key-k1" 32
openssl genpkey -algorithm ed25519 -out "$dir/evidence-signing.pem"
printf 'dev-only-client-secret' > "$dir/oidc-client-secret"
echo "DEVELOPMENT-ONLY secrets written to $dir"
