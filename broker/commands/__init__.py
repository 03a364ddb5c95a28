"""The operator's commands that drive a running broker through its API (``broker quarantine``,
``broker rewind``): one signed JSON request each (``aws.api_client``), the answer printed as JSON."""
