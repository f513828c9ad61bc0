resource "aws_ecs_cluster" "demo" {
  name = var.name
}

# Switching `ecs_task_definition_file` replaces this resource: ECS registers the next revision of the
# family and Terraform deregisters the previous one.
resource "aws_ecs_task_definition" "demo" {
  family                   = var.name
  container_definitions    = file(var.ecs_task_definition_file)
  network_mode             = "awsvpc"
  requires_compatibilities = ["FARGATE"]
  cpu                      = 256
  memory                   = 512
}
