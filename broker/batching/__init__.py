"""Pure batch logic: the Lambda event envelope and its 6 MiB limit, filters, partial-failure
responses, the checkpoint tracker."""
