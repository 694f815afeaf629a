"""Pages of deployments: the list, creating one (with a live dry run), one deployment
with its instances, and the log tail of an instance."""
