"""The one error type of the deployment runtime."""


class DeployError(ValueError):
    """A model directory, image or option the runner cannot use; the message says the fix."""
