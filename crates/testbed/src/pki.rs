//! Each cluster's own certificate authority, serving and client certificates,
//! and service-account signing keys. Generated once per cluster directory and
//! kept, so that a restarted testbed keeps its tokens and kubeconfig valid.

use std::{
    fs,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::{ClusterLayout, Component, Error};

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Paths of one cluster's PKI.
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(layout: &ClusterLayout) -> Self {
        Self {
            dir: layout.pki_dir(),
        }
    }

    pub fn ca(&self) -> CertFiles {
        self.pair("ca")
    }

    pub fn apiserver(&self) -> CertFiles {
        self.pair("kube-apiserver")
    }

    pub fn admin(&self) -> CertFiles {
        self.pair("admin")
    }

    /// The apiserver's client certificate towards kubelets (logs, exec).
    pub fn apiserver_kubelet_client(&self) -> CertFiles {
        self.pair("apiserver-kubelet-client")
    }

    /// The client (and, for those that serve, serving) certificate of a component.
    pub fn component(&self, c: Component) -> CertFiles {
        self.pair(c.name())
    }

    pub fn sa_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }

    pub fn sa_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }

    fn pair(&self, name: &str) -> CertFiles {
        CertFiles {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        }
    }

    /// Creates whatever is missing. Existing files are kept as they are.
    pub fn ensure(&self, layout: &ClusterLayout) -> Result<(), Error> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let ca = self.ca();
        if !ca.cert.exists() || !ca.key.exists() {
            let key = KeyPair::generate().map_err(pki_err)?;
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki_err)?;
            params.distinguished_name = dn(&format!("{}-ca", layout.name), None);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_after = years_from_now(10);
            let cert = params.self_signed(&key).map_err(pki_err)?;
            write_pair(&ca, &cert.pem(), &key.serialize_pem())?;
        }
        let ca_key_pem = read(&ca.key)?;
        let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(pki_err)?;
        let issuer = Issuer::from_ca_cert_pem(&read(&ca.cert)?, ca_key).map_err(pki_err)?;

        let service_ip = layout.kubernetes_service_ip().to_string();
        let apiserver_sans = vec![
            "127.0.0.1".to_string(),
            layout.apiserver_ip().to_string(),
            "localhost".into(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
            service_ip,
        ];
        self.leaf(
            &issuer,
            &self.apiserver(),
            "kube-apiserver",
            None,
            apiserver_sans,
        )?;
        self.leaf(
            &issuer,
            &self.admin(),
            &format!("{}-admin", layout.name),
            Some("system:masters"),
            vec![],
        )?;
        let local = || vec!["127.0.0.1".to_string(), "localhost".to_string()];
        self.leaf(
            &issuer,
            &self.component(Component::KubeControllerManager),
            "system:kube-controller-manager",
            None,
            local(),
        )?;
        self.leaf(
            &issuer,
            &self.component(Component::KubeScheduler),
            "system:kube-scheduler",
            None,
            local(),
        )?;
        // kwok plays every kubelet: it writes node and pod status across the cluster.
        self.leaf(
            &issuer,
            &self.component(Component::Kwok),
            "kwok",
            Some("system:masters"),
            local(),
        )?;

        if layout.nodes == crate::Nodes::Real {
            // The node authorizer knows a kubelet by this name and group.
            self.leaf(
                &issuer,
                &self.component(Component::Kubelet),
                &format!("system:node:{}", layout.node_name()),
                Some("system:nodes"),
                vec![layout.node_ip().to_string()],
            )?;
            self.leaf(
                &issuer,
                &self.component(Component::KubeProxy),
                "system:kube-proxy",
                None,
                vec![],
            )?;
            self.leaf(
                &issuer,
                &self.component(Component::Agent),
                "tandem-testbed-agent",
                Some("system:masters"),
                vec![],
            )?;
            self.leaf(
                &issuer,
                &self.apiserver_kubelet_client(),
                "kube-apiserver-kubelet-client",
                Some("system:masters"),
                vec![],
            )?;
        }

        if !self.sa_key().exists() || !self.sa_pub().exists() {
            let key = KeyPair::generate().map_err(pki_err)?;
            write_private(&self.sa_key(), &key.serialize_pem())?;
            fs::write(self.sa_pub(), key.public_key_pem())
                .map_err(|e| Error::io(self.sa_pub(), e))?;
        }
        Ok(())
    }

    fn leaf(
        &self,
        issuer: &Issuer<'_, KeyPair>,
        files: &CertFiles,
        cn: &str,
        org: Option<&str>,
        sans: Vec<String>,
    ) -> Result<(), Error> {
        if files.cert.exists() && files.key.exists() {
            return Ok(());
        }
        let key = KeyPair::generate().map_err(pki_err)?;
        let mut params = CertificateParams::new(sans).map_err(pki_err)?;
        params.distinguished_name = dn(cn, org);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_after = years_from_now(5);
        let cert = params.signed_by(&key, issuer).map_err(pki_err)?;
        write_pair(files, &cert.pem(), &key.serialize_pem())
    }
}

fn dn(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(org) = org {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

fn years_from_now(years: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(365 * years)
}

fn pki_err(e: rcgen::Error) -> Error {
    Error::Pki(e.to_string())
}

fn read(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

fn write_pair(files: &CertFiles, cert: &str, key: &str) -> Result<(), Error> {
    write_private(&files.key, key)?;
    fs::write(&files.cert, cert).map_err(|e| Error::io(&files.cert, e))
}

/// Writes a file only its owner may read (keys, kubeconfigs).
pub(crate) fn write_private(path: &Path, body: &str) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    std::io::Write::write_all(&mut f, body.as_bytes()).map_err(|e| Error::io(path, e))
}
