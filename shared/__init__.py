"""Code shared by the Spotter ingress and workers: envelope, schemas, runtime, config, logging."""
