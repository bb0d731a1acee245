"""Images made elsewhere (an ImageFolder, a JSONL/CSV list, a saved `datasets` dataset) as a step folder.

The stage that stands in for generation when evalkit did not make the images: `sources` reads the
three layouts into rows, `match` ties each row to a prompt (a built-in set's by id, or a free
prompt), `ingest` checks every image and writes generation.json (an external protocol, the user's
declaration), the images, their manifest and the free prompts. Scoring and everything after it
then read the folder as they read a generated one.
"""
