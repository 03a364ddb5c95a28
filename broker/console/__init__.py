"""The web console's page, script and style sheet, served by the broker from this package
(``api/console.py``): no build step, nothing fetched from elsewhere, works offline."""
