"""What a running deployment is doing: each replica's view published to Redis (``reporter``),
merged with what Redis itself holds into one document (``document``) for the status API, the
``broker status`` command and the console."""
