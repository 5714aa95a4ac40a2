"""The project's own package: DICOMweb domain logic, services and AWS adapters."""
