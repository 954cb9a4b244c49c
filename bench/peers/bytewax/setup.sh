#!/usr/bin/env bash
# Create bench/peers/bytewax/.venv with the pinned Bytewax + confluent-kafka.
# Idempotent: does nothing if the venv is complete and matches requirements.txt.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
req="$here/requirements.txt"
stamp="$venv/.requirements.installed"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3

if [[ -x "$venv/bin/python" && -f "$stamp" ]] && cmp -s "$req" "$stamp" \
   && "$venv/bin/python" -c 'import bytewax.run, bytewax.connectors.kafka, confluent_kafka' >/dev/null 2>&1; then
  exit 0
fi

rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
"$venv/bin/python" -c 'import bytewax.run, bytewax.connectors.kafka, confluent_kafka'
cp "$req" "$stamp"
