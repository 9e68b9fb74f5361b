"""Deploy, swap back, undeploy (in both traffic modes), scale, drain and scale-in with
Greenlight's token bound to exactly deploy/base/rbac.yaml, on a localcluster that enforces
RBAC.

The tests are the integration tests of tests/deployer and tests/scaling themselves, collected
here a second time: this folder's conftest gives them the enforcing cluster and Greenlight's
kubeconfig, so every call Greenlight makes is checked against rbac.yaml.
"""

from __future__ import annotations

import pytest

from tests.deployer.test_disruption import (
    test_it_drains_a_node_one_pod_at_a_time_under_a_budget,
    test_it_scales_down_under_load_without_losing_a_request,
)
from tests.deployer.test_integration import (
    test_it_deploys_upgrades_and_refuses_a_broken_version,
    test_it_swaps_back_to_the_version_kept_warm,
)
from tests.deployer.test_traffic_service import (
    test_it_moves_the_stable_services_selector_and_loses_no_request,
    test_swap_back_points_the_selector_at_the_warm_version,
    test_undeploy_deletes_the_stable_service,
)
from tests.scaling.test_drain import test_it_drains_a_node_and_the_pods_come_back_on_other_nodes
from tests.scaling.test_local_provider import (
    test_it_scales_a_local_group_out_and_back_in_through_a_drain,
)

pytestmark = pytest.mark.timeout(300)

__all__ = [
    "test_it_deploys_upgrades_and_refuses_a_broken_version",
    "test_it_drains_a_node_and_the_pods_come_back_on_other_nodes",
    "test_it_drains_a_node_one_pod_at_a_time_under_a_budget",
    "test_it_moves_the_stable_services_selector_and_loses_no_request",
    "test_it_scales_a_local_group_out_and_back_in_through_a_drain",
    "test_it_scales_down_under_load_without_losing_a_request",
    "test_it_swaps_back_to_the_version_kept_warm",
    "test_swap_back_points_the_selector_at_the_warm_version",
    "test_undeploy_deletes_the_stable_service",
]
