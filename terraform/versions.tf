terraform {
  # Terraform 1.x: the `-chdir`-free workflow ecsdemo drives (init, plan -out, apply <plan>, output -json).
  required_version = ">= 1.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.x is what current Terraform installs (and what an offline mirror usually holds).
      version = ">= 5.0, < 6.0"
    }
  }
}
