# Terraform and provider versions. The google provider 6.x removed
# `ip_configuration.require_ssl` in favour of `ssl_mode`, which this configuration uses.
# `terraform init` records the exact provider versions and their checksums in
# .terraform.lock.hcl: commit that file (README.md, "Provider lock file").
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
    # gke.tf / argo.tf (enable_gke): the flows' namespace and Argo Workflows in the cluster.
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.31, < 3.0"
    }
    helm = {
      source  = "hashicorp/helm"
      version = ">= 3.0, < 4.0"
    }
  }

  # The state lives in a private, versioned Cloud Storage bucket, never on a laptop.
  # Partial configuration: the bucket is named at init time, e.g.
  #   terraform init -backend-config="bucket=PROJECT_ID-tfstate" -backend-config="prefix=operational-ml"
  # README.md ("Remote state") creates the bucket once.
  backend "gcs" {}
}

provider "google" {
  project = var.project_id
  region  = var.region
}
