"""Failure and success records, and their delivery to SQS, SNS, S3 and EventBridge."""
