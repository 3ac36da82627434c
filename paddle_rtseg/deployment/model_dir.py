"""An exported model directory: ``deploy.yaml`` and the model files it names."""
import os

from .errors import DeployError


def read_deploy_yaml(model_dir, program_files=True):
    """``Deploy`` section of ``model_dir/deploy.yaml``. With ``program_files`` the Paddle program
    files it names (``model``, ``params``) must exist; the ONNX and Lite runners pass False, since a
    device gets only ``deploy.yaml`` and its ``model.onnx`` / ``model_<target>.nb``."""
    import yaml
    path = os.path.join(model_dir, "deploy.yaml")
    if not os.path.isdir(model_dir):
        raise DeployError("Model directory {} does not exist. Pass the --save_dir of "
                          "`python -m paddle_rtseg.export`.".format(model_dir))
    if not os.path.isfile(path):
        raise DeployError("{} has no deploy.yaml; it is not an exported model directory. Export "
                          "with `python -m paddle_rtseg.export --config ... --save_dir {}`."
                          .format(model_dir, model_dir))
    with open(path) as f:
        info = (yaml.safe_load(f) or {}).get("Deploy")
    if not isinstance(info, dict) or "model" not in info:
        raise DeployError("{} has no `Deploy: {{model, params, transforms}}` section.".format(path))
    missing = [info[k] for k in ("model", "params") if program_files and k in info
               and not os.path.isfile(os.path.join(model_dir, info[k]))]
    if missing:
        raise DeployError("Model directory {} is missing {} (named in deploy.yaml). Re-run the "
                          "export into this directory.".format(model_dir, ", ".join(missing)))
    info.setdefault("transforms", [{"type": "Normalize"}])
    info.setdefault("input_shape", [-1, 3, -1, -1])
    info.setdefault("output_op", "argmax")
    return info


def model_paths(model_dir):
    info = read_deploy_yaml(model_dir)
    return os.path.join(model_dir, info["model"]), os.path.join(model_dir, info["params"])
