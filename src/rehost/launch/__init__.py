"""EC2-style launch templates and instances over a target driver, and the job runner's Launcher.

`service.Ec2Service` holds the operations, `launcher.TargetLauncher` launches jobs' instances,
`sizing` chooses instance types, `placement.Targets` the targets instances run on; the control plane
(`rehost.controlplane.ControlPlane`) assembles all of it.
"""
