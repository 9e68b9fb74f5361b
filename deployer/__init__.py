"""Blue-green deployments: app descriptors, the workflow, and the cluster and LB seams."""
