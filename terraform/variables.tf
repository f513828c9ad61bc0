variable "region" {
  description = "AWS region for every resource of the demo."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]+$", var.region))
    error_message = "The region must look like an AWS region name, for example us-east-1."
  }
}

variable "name" {
  description = "Name of the ECS cluster and task definition family; also tags the network resources."
  type        = string
  default     = "nomad-remote-driver-demo"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,255}$", var.name))
    error_message = "The name may hold only letters, digits, hyphens and underscores (1-255 characters)."
  }
}

variable "vpc_cidr_block" {
  description = "CIDR block of the demo VPC; its single subnet uses the whole block."
  type        = string
  default     = "10.0.0.0/24"

  validation {
    condition     = can(cidrhost(var.vpc_cidr_block, 0))
    error_message = "The VPC CIDR block must be a valid IPv4 CIDR, for example 10.0.0.0/24."
  }
}

variable "ecs_task_definition_file" {
  description = "JSON file with the task definition's container definitions (an array)."
  type        = string
  default     = "./files/base-demo.json"
}
