"""The one support package of tests, benchmarks and scripts: real Azurite and PostgreSQL
servers, isolated app settings, a trained model to publish, the Functions host's request
objects, bounded waiting and latency statistics. Not deployed (.funcignore)."""
