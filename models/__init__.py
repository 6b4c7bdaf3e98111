"""Model packages and everything that turns a file into a model: format, validation, band mapping, loaders."""
