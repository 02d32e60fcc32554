"""The EC2 subset rehost serves (launch templates and instances), wire-compatible with botocore's ``ec2``."""
