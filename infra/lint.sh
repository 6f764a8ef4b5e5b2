#!/usr/bin/env bash
# Compile and lint every Bicep template; a warning fails like an error. The rules switched off
# are named, each with its reason, in infra/bicepconfig.json.
#
# Uses `az bicep` (Azure CLI) or a standalone `bicep` on PATH. With neither, it says so and
# succeeds: no Bicep compiler is published on the registries this project installs from (only
# NuGet carries one), so `make lint` on a machine without the Azure CLI checks the templates
# with checkov alone; the workflow's runners have the Azure CLI and always compile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if command -v az >/dev/null 2>&1 && az bicep version >/dev/null 2>&1; then
    build() { az bicep build --file "$1" --stdout; }
    lint() { az bicep lint --file "$1"; }
    compiler="az bicep ($(az bicep version 2>&1 | head -1))"
elif command -v bicep >/dev/null 2>&1; then
    build() { bicep build "$1" --stdout; }
    lint() { bicep lint "$1"; }
    compiler="bicep ($(bicep --version 2>&1 | head -1))"
else
    echo "bicep: no Bicep compiler on PATH (neither 'az bicep' nor 'bicep'): templates NOT compiled or linted here (the workflow compiles them)"
    exit 0
fi

echo "bicep: $compiler"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=0
for template in main.bicep modules/*.bicep; do
    if ! build "$template" >/dev/null 2>"$log" || ! lint "$template" 2>>"$log"; then
        failed=1
    fi
    # Both print diagnostics as "file(line,col) : Warning rule: message" on stderr.
    if grep -E ': (Warning|Error) ' "$log"; then
        failed=1
    fi
done
if [ "$failed" -ne 0 ]; then
    echo "bicep: the templates have errors or warnings (above)" >&2
    exit 1
fi
echo "bicep: every template compiles and lints clean"
