"""
The pipeline's contract, shared by every proxy: the interfaces (`IPolicy`,
`IUpstreamChooser`, `IUpstream`, `IBalancer`, `IReporter`, `IProxy`), the
values that travel through it (`Intent`, `Decision`, `AccessRecord`), the
one error tree, `check` of plug-ins at assembly, the one connect path
(`UpstreamEndpoint`: deadline and error vocabulary) and the one attempt
machinery (`Attempts`).  The public names are exported by `multiproxy`.
"""
