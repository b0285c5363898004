"""NATS subjects and JetStream streams of each tenant: naming (``subjects``) and provisioning (``streams``)."""
