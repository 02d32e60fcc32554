"""EC2-style launch templates and instances over a target driver, and the job runner's Launcher.

`service.Ec2Service` holds the operations, `launcher.TargetLauncher` launches jobs' instances,
`sizing` chooses instance types, `wiring.attach_launch(cp)` plugs all of it into a control plane.
"""
