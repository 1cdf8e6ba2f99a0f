"""The HTTP ingress: validates client events and publishes them to RabbitMQ with confirms."""
