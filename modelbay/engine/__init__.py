"""The domain: synchronous, no chat-platform imports. One package per capability.

- `catalog/`: registry, ranked search, registration, the curated catalog, discovery and model `sources/`
- `installs/`: pre-flight, file selection, verified transfer, the model store, and what "loadable" means
- `inference/`: backends, context fitting, chat templates, vLLM servers
- `chat/`: sessions, answers and ratings
- `analytics/`: per-model metrics from answers and ratings
- `jobs/`: background job kinds, submission, progress, cancel, retries
- `db/`: the database and its tables, one schema module per area
- `datasets/`: dataset files read row by row, validated, tokenised as training reads them, reported on
- shared: `errors` (every user-facing error), `records`, `ids`, `units`, `hardware`
"""
