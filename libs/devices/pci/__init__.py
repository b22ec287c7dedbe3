"""PCI functions and IOMMU groups through sysfs, and moving a GPU's group onto vfio-pci for a VM and back."""

from libs.devices.pci.binding import VFIO_PCI, bind_to_vfio, restore_driver, wait_for_group_node, writes_settled
from libs.devices.pci.sysfs import PciSysfs
from libs.devices.pci.vm_gpus import VmGpus

__all__ = ["VFIO_PCI", "PciSysfs", "VmGpus", "bind_to_vfio", "restore_driver", "wait_for_group_node", "writes_settled"]
