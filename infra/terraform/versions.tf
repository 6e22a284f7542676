# Terraform and provider versions. The google provider 6.x removed
# `ip_configuration.require_ssl` in favour of `ssl_mode`, which this configuration uses.
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.6, < 4.0"
    }
  }

  # The state holds the generated database password: keep it in a private bucket,
  # not on a laptop. Create the bucket once, then uncomment and run `terraform init`.
  # backend "gcs" {
  #   bucket = "YOUR-PROJECT-tfstate"
  #   prefix = "operational-ml"
  # }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
