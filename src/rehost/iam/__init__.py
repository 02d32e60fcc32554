"""IAM for rehost: policy validation and evaluation (`policy`), the AWS managed policies (`managed`)."""
