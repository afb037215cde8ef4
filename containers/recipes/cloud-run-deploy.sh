#!/usr/bin/env bash
# A shared staging mock on Cloud Run: keys and the admin token from Secret Manager, never on a command line.
set -euo pipefail
PROJECT=my-project REGION=europe-west1
IMAGE="$REGION-docker.pkg.dev/$PROJECT/tools/mock-chart-img:dev"

# 1. The image (built by scripts/images.sh --release), pushed to Artifact Registry.
podman push localhost/mock-chart-img:dev "$IMAGE"

# 2. The secrets: the keys your staging clients use, and the admin token (values from stdin).
printf '%s' "staging-key:PRO,staging-basic:BASIC" | gcloud secrets create mock-chart-img-keys --data-file=- --project "$PROJECT"
openssl rand -hex 24 | gcloud secrets create mock-chart-img-admin-token --data-file=- --project "$PROJECT"

# 3. The service. Cloud Run sets PORT (the image listens on 0.0.0.0:$PORT); with the token, /__admin is on the same
#    port and refuses requests without `Authorization: Bearer <token>`; /__admin/health answers without it.
gcloud run deploy mock-chart-img-staging \
  --project "$PROJECT" --region "$REGION" --image "$IMAGE" \
  --port 8080 --cpu 1 --memory 512Mi --min-instances 1 --max-instances 1 \
  --set-env-vars MOCK_CHART_IMG_SEED=7,MOCK_CHART_IMG_LOG_SUMMARY_SECS=60 \
  --set-secrets MOCK_CHART_IMG_KEYS=mock-chart-img-keys:latest,MOCK_CHART_IMG_ADMIN_TOKEN=mock-chart-img-admin-token:latest \
  --allow-unauthenticated
