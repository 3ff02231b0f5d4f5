"""`make races`: operations side by side on mounts of one domain, the windows held open."""
