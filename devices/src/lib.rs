//! Typed, hardened models of QEMU 7.2 `pc` device state for the `vmstate` codec.
//!
//! One file per device: the zerocopy state struct(s), the const description table(s) checked
//! against them at compile time, the `needed` predicates, the invariants enforced on load (each
//! naming the CVE class it prevents, per `untrusted-input.md` §4) and tests on real bytes.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod fw_cfg;
pub mod globalstate;
pub mod hpet;
pub mod i8254;
pub mod i8259;
pub mod ioapic;
pub mod pc;
pub mod pcspk;
pub mod port92;
pub mod rtc;
pub mod serial;
pub mod timer;

#[cfg(test)]
mod test_fixtures;

#[cfg(test)]
mod plan_tests {
    /// The fixed-layout devices are compiled into copy plans (one copy per encode and load);
    /// tables with variable parts are not.
    #[test]
    fn fixed_layout_devices_have_copy_plans() {
        let rtc = crate::rtc::VMSD.plan_for(3).expect("rtc has a plan");
        assert_eq!(rtc.zeros().len(), 2, "two VMSTATE_UNUSED ranges");
        let pit = crate::i8254::VMSD.plan_for(3).expect("i8254 has a plan");
        assert!(
            pit.hooks[0].is_some_and(|h| h.count == 3),
            "channel checks run on load"
        );
        assert!(crate::rtc::VMSD.plan_for(2).is_none());
        assert!(
            crate::hpet::VMSD.plan.is_none(),
            "hpet's timers are a varray"
        );
    }
}
