"""The dispatch function: training-requests -> one trainer execution per job."""
