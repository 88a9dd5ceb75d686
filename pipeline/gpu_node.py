"""The GPU node every training job runs on: one node selector, one toleration, one GPU.

The single source for the code (`training_job`, `monthly_retraining_job`, `retraining_resume_job`,
`profiles_job` carry `GPU_RUN_TAGS`); deploy/k8s/training-pod.yaml and deploy/helm/values.yaml repeat
these values and tests/test_deploy_files.py keeps them equal. The GPU node group is labelled
``lbzf/accelerator=nvidia-gpu`` and tainted ``nvidia.com/gpu=present:NoSchedule`` (docs/deployment.md).
"""
from __future__ import annotations

GPU_NODE_SELECTOR = {"lbzf/accelerator": "nvidia-gpu"}
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
GPU_RESOURCES = {"limits": {"nvidia.com/gpu": "1", "memory": "24Gi"},
                 "requests": {"nvidia.com/gpu": "1", "cpu": "4", "memory": "16Gi"}}

#: The `dagster-k8s/config` of a training run's pod (container and pod spec, dagster-k8s's snake_case).
GPU_POD = {
    "container_config": {"resources": GPU_RESOURCES},
    "pod_spec_config": {"node_selector": GPU_NODE_SELECTOR, "tolerations": GPU_TOLERATIONS},
}
#: Job tags that put a run's pod on the GPU node under the K8sRunLauncher; other launchers ignore them.
GPU_RUN_TAGS = {"dagster-k8s/config": GPU_POD}
