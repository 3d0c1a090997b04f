"""`tuning dashboard`: a local web UI for the API, served on 127.0.0.1 only.

The server renders the pages and forwards the page's API calls to the configured function
URLs with the user's ID token, exactly as the CLI makes them (`tuning.cli.client`), like
`gcloud run services proxy`: the functions stay private and no token ever reaches the page.
The chart library (uPlot, from the npm registry) is fetched at install time into an ignored
build folder (`tuning.dashboard.assets`) and served from there.
"""
