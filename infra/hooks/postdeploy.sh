#!/usr/bin/env bash
# After both apps are published: subscribe the pipeline app's blob trigger to BlobCreated
# events of datasets/ (modules/eventgrid.bicep), once its host has started.
#
# Event Grid validates the webhook when the subscription is created, and the webhook's key
# (the host's blobs_extension system key) exists only after the pipeline host has started
# with the published code. So: wait for the host to answer, then for the key, then deploy the
# subscription, retrying while validation fails on a host that is still warming up.
#
# Run by `azd up` / `azd deploy` (azure.yaml) with the deployment's outputs in the
# environment, and by .github/workflows/deploy.yml with the same variables set.
set -euo pipefail

: "${AZURE_RESOURCE_GROUP:?the resource group (azd sets it)}"
: "${PIPELINE_APP_NAME:?an output of infra/main.bicep}"
: "${STORAGE_ACCOUNT_NAME:?an output of infra/main.bicep}"
: "${AZURE_LOCATION:?an output of infra/main.bicep}"
TRIES="${MLOPS_HOOK_TRIES:-40}"       # 40 x 15 s: ten minutes for a cold Flex host
PAUSE="${MLOPS_HOOK_PAUSE_SECONDS:-15}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

host=$(az functionapp show -g "$AZURE_RESOURCE_GROUP" -n "$PIPELINE_APP_NAME" --query defaultHostName -o tsv)
echo "waiting for the pipeline host ($host) to start"
for ((i = 1; i <= TRIES; i++)); do
    # Any HTTP answer means the host is up (the pipeline app has no public route: 404 is fine).
    code=$(curl --silent --output /dev/null --write-out '%{http_code}' --max-time 20 "https://$host/" || true)
    [ "$code" != "000" ] && [ "${code:0:1}" != "5" ] && break
    sleep "$PAUSE"
done

echo "waiting for the host's blobs_extension key"
key=""
for ((i = 1; i <= TRIES; i++)); do
    key=$(az functionapp keys list -g "$AZURE_RESOURCE_GROUP" -n "$PIPELINE_APP_NAME" \
        --query "systemKeys.blobs_extension" -o tsv 2>/dev/null || true)
    [ -n "$key" ] && break
    sleep "$PAUSE"
done
if [ -z "$key" ]; then
    echo "the pipeline host has no blobs_extension key after $((TRIES * PAUSE)) s: is the code published and the host running?" >&2
    exit 1
fi

echo "subscribing $PIPELINE_APP_NAME to BlobCreated events of datasets/"
for ((i = 1; i <= 5; i++)); do
    if az deployment group create -g "$AZURE_RESOURCE_GROUP" --name mlops-events \
        --template-file "$here/../modules/eventgrid.bicep" \
        --parameters storageAccountName="$STORAGE_ACCOUNT_NAME" location="$AZURE_LOCATION" \
        functionAppName="$PIPELINE_APP_NAME" functionName=train container=datasets \
        deadLetterContainer=eventgrid-deadletter --output none; then
        echo "subscribed; undeliverable events go to eventgrid-deadletter (python -m ops list)"
        exit 0
    fi
    echo "the subscription was refused (attempt $i of 5; webhook validation needs a warm host); retrying" >&2
    sleep "$((PAUSE * 2))"
done
exit 1
