# Credentials come from the usual AWS sources (environment, shared config, SSO, instance role).
# In local mode ecsdemo adds a generated `local_override.tf` next to this file that points the
# provider at the embedded endpoint; that file never exists in real-AWS mode.
provider "aws" {
  region = var.region
}
