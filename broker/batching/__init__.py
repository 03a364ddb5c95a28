"""Pure batch logic: cutting batches, filters, partial-failure responses, retry decisions."""
