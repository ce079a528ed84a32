"""
The pipeline's contract, shared by every proxy: the interfaces (`IPolicy`,
`IUpstreamChooser`, `IUpstream`, `IBalancer`, `IReporter`, `IProxy`), the
values that travel through it (`Intent`, `Decision`, `AccessRecord`), the
one error tree, `Pipeline` (the plug-ins a proxy is assembled from, each
`check`ed once), the one connect path
(`UpstreamEndpoint`: deadline and error vocabulary) and the one attempt
machinery (`Attempts`).  The public names are exported by `multiproxy`.
"""
