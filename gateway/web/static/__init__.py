"""The web console's stylesheet and script, served from the package."""
