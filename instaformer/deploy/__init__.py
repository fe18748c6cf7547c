"""Deployment: ``torch.export`` / ONNX export of the network and the order head
(:mod:`instaformer.deploy.export`), ONNX Runtime inference (:mod:`instaformer.deploy.runtime`)
and where its time goes (:mod:`instaformer.deploy.profile`).

ONNX and ONNX Runtime are optional (``pip install 'instaformer[export]'``); importing this
package does not need them.
"""
