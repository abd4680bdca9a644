"""The dashboard's screens: cluster (main), one job, dialogs and help."""
