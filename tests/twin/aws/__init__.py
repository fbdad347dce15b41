"""The AWS twin: moto (EC2, IAM, STS) in-process, extended with SSM Run Command, the VSS documents and
the EC2 behaviour the collection relies on."""
