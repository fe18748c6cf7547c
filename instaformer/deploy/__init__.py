"""Deployment: ``torch.export`` / ONNX export of the network and the order head
(:mod:`instaformer.deploy.export`) and ONNX Runtime inference (:mod:`instaformer.deploy.runtime`).

ONNX and ONNX Runtime are optional (``pip install 'instaformer[export]'``); importing this
package does not need them.
"""
