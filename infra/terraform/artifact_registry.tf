# The Docker repository for the project's images (docker/Dockerfile, docker/Dockerfile.gpu):
# `serve` for Cloud Run, `pipeline` and `pipeline-gpu` for Kubernetes steps. The pipeline
# workflow's `image` job pushes them on main, tagged with the commit, and deploys by digest.

locals {
  # REGION-docker.pkg.dev/PROJECT/REPOSITORY: images are this plus /serve, /pipeline, /pipeline-gpu.
  image_repository = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

data "google_project" "this" {}

resource "google_project_service" "containers" {
  for_each = toset([
    "artifactregistry.googleapis.com", # the image repository
    "cloudkms.googleapis.com",         # its encryption key
    "run.googleapis.com",              # the serving service (serving.tf)
  ])

  service            = each.value
  disable_on_destroy = false
}

# Images are encrypted with a key of this project (CMEK), rotated every 90 days, so that
# access to them can be revoked by disabling the key.
resource "google_kms_key_ring" "images" {
  name     = "${var.image_repository_id}-keys"
  location = var.region

  depends_on = [google_project_service.containers]
}

resource "google_kms_crypto_key" "images" {
  name            = "${var.image_repository_id}-images"
  key_ring        = google_kms_key_ring.images.id
  rotation_period = "7776000s" # 90 days

  lifecycle {
    prevent_destroy = true
  }
}

# Artifact Registry's service agent encrypts and decrypts with that key, and nothing else does.
resource "google_kms_crypto_key_iam_member" "artifact_registry_agent" {
  crypto_key_id = google_kms_crypto_key.images.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-artifactregistry.iam.gserviceaccount.com"
}

resource "google_artifact_registry_repository" "images" {
  location      = var.region
  repository_id = var.image_repository_id
  description   = "Container images of ${local.github_repository}: serve (Cloud Run), pipeline and pipeline-gpu (Kubernetes)."
  format        = "DOCKER"
  kms_key_name  = google_kms_crypto_key.images.id

  # A tag, once pushed, always names the same image: a deployed digest cannot be swapped
  # behind a tag, and the workflow reuses the image of a commit instead of rebuilding it.
  docker_config {
    immutable_tags = true
  }

  # Keep the most recent images (and whatever is deployed, which is among them); delete
  # untagged layers of interrupted pushes.
  cleanup_policy_dry_run = false
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.image_keep_count
    }
  }
  cleanup_policies {
    id     = "delete-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "604800s" # 7 days
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.artifact_registry_agent]
}

# The production pipeline's account pushes images to this repository only (writer: push and
# read; it cannot delete images or change the repository or who has access).
resource "google_artifact_registry_repository_iam_member" "pipeline_push" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = local.pipeline_member
}
