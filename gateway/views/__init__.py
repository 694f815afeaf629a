"""Pages of the gateway: inference keys (list, create once-shown, revoke) and usage."""
