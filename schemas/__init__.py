"""parkwarden's wire contract: message models, the topic registry and their JSON encoding."""
