output "demo_subnet_id" {
  description = "Subnet the Fargate task runs in (the job's `subnets`)."
  value       = aws_subnet.demo.id
}

output "demo_security_group_id" {
  description = "Security group of the Fargate task (the job's `security_groups`)."
  value       = aws_security_group.demo.id
}

output "cluster_name" {
  description = "ECS cluster the Nomad plugin runs tasks in."
  value       = aws_ecs_cluster.demo.name
}

output "region" {
  description = "AWS region of every resource."
  value       = var.region
}

output "task_definition_family" {
  description = "Task definition family."
  value       = aws_ecs_task_definition.demo.family
}

output "task_definition_revision" {
  description = "Current revision of the family (changes when the container definitions file changes)."
  value       = aws_ecs_task_definition.demo.revision
}

output "task_definition_arn" {
  description = "Full ARN of the current revision."
  value       = aws_ecs_task_definition.demo.arn
}
